"""Trainable models (installed as ``skypile.classifiers``): language id, KenLM, quality, STEM.

Each model has ``train()`` that writes an artefact and ``load()`` that reads it.
"""
