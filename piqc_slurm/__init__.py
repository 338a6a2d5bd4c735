"""piqc-slurm: make the GPU spend of Slurm batch jobs visible."""

__version__ = "0.1.0"
