"""Each job's typed config and the checks it must pass: plain dataclasses (no Beam, no
torch), shared by the pipelines that run a job and the commands that read its output."""
