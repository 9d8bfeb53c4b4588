"""gentrain: train VAE, GAN and VAE-GAN image models from Hydra configs."""

__version__ = "0.1.0"
