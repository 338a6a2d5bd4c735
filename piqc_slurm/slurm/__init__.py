"""Slurm accounting: the sacct command line (argv.py), pure value parsers
(parse.py) and sacct output -> job records (records.py). Running sacct is
kept apart from parsing its text, so every parser is tested on recorded
output (tests/fixtures/sacct/).

Nothing is imported here: importing one of them (usage.efficiency needs
parse) must not load the others (records: 11 ms of every `piqc-slurm sacct`)."""
