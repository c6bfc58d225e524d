"""Data: read any common format loudly, clean, deduplicate, split without leakage, profile, augment."""

from tuneloop.data.check import CheckReport, check_data
from tuneloop.data.clean import clean_file, clean_text
from tuneloop.data.dedup import DedupResult, find_duplicates, find_overlap
from tuneloop.data.example import Example
from tuneloop.data.load import LoadedData, load_examples, load_examples_strict
from tuneloop.data.problems import DataError, Problem
from tuneloop.data.readers import read_records, refuse_overwriting, write_records
from tuneloop.data.split import Splits, split_examples
from tuneloop.data.stats import profile
from tuneloop.data.tokens import TokenLengths, token_lengths, validate_lengths

__all__ = [
    "CheckReport",
    "DataError",
    "DedupResult",
    "Example",
    "LoadedData",
    "Problem",
    "Splits",
    "TokenLengths",
    "check_data",
    "clean_file",
    "clean_text",
    "find_duplicates",
    "find_overlap",
    "load_examples",
    "load_examples_strict",
    "profile",
    "read_records",
    "refuse_overwriting",
    "split_examples",
    "token_lengths",
    "validate_lengths",
    "write_records",
]
