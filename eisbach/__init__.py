"""Eisbach: a reproducibility pipeline for entropy-weighted audio-diffusion fine-tuning."""
