"""The fixture's rows from the JSONL beside this file (local data_files, no hub)."""

from pathlib import Path

import datasets


def load_mc_mini(**kwargs) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={"test": str(Path(__file__).with_name("mc_mini.jsonl"))})
