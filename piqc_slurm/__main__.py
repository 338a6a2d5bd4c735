from piqc_slurm.cli import main

main()
