"""Slurm accounting: the sacct command line (argv.py), pure value parsers
(parse.py) and sacct output -> job records (records.py). Running sacct is
kept apart from parsing its text, so every parser is tested on recorded
output (tests/fixtures/sacct/)."""

from piqc_slurm.slurm.argv import sacct_argv, sacct_env, time_slices
from piqc_slurm.slurm.fields import DELIMITER, INGEST_FIELDS
from piqc_slurm.slurm.records import JOB_COLUMNS, JobRecord, ParseResult, StepRecord, parse_sacct

__all__ = ["DELIMITER", "INGEST_FIELDS", "JOB_COLUMNS", "JobRecord", "ParseResult", "StepRecord",
           "parse_sacct", "sacct_argv", "sacct_env", "time_slices"]
