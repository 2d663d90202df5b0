"""The fixture's rows from the JSONL beside this file (local data_files, no hub), scored by lm-eval's own IFEval code."""

from pathlib import Path

import datasets
from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results

__all__ = ["agg_inst_level_acc", "load_ifeval_mini", "process_results"]


def load_ifeval_mini(**kwargs) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={"test": str(Path(__file__).with_name("ifeval_mini.jsonl"))})
