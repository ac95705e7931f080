"""SkyPile: bilingual (English + Chinese) pretraining corpora, the Skywork-13B way.

The core package holds the pure pieces (documents, readers, HTTP decoding, extraction,
statistics, configuration). It imports neither apache_beam nor torch; the Beam pipelines
live in ``skypile.pipelines`` and the trainer in ``skypile.trainer``.
"""

__version__ = "0.1.0"
