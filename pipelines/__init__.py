"""Apache Beam pipelines (installed as ``skypile.pipelines``): thin shells around skypile."""
