"""The PyTorch trainer (installed as ``skypile.trainer``). Reads shards via ``skypile``."""
