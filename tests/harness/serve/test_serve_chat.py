"""`hindsight chat` driven like a person would, in a real terminal (tmux): it answers, learns from the person's
complaint, says how far the adapter moved, colours the last update's tokens by advantage, and keeps the adapter."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Terminal:
    """A tmux session on a private server socket: type into it, read its screen."""

    def __init__(self, name: str, command: str, width: int = 150):
        self.tmux = ["tmux", "-L", name]
        subprocess.run([*self.tmux, "new-session", "-d", "-s", name, "-x", str(width), "-y", "60", command], check=True, cwd=ROOT)
        self.name = name

    def screen(self, colours: bool = False) -> str:
        args = [*self.tmux, "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name] + (["-e"] if colours else [])
        return subprocess.run(args, capture_output=True, text=True).stdout

    def type(self, text: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, "-l", text], check=True)
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, "Enter"], check=True)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if len(re.findall(pattern, screen)) >= count:
                return screen
            assert time.monotonic() < deadline, f"waited for {pattern!r} ×{count}:\n{screen}"
            time.sleep(0.3)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_chat_learns_from_a_complaint_shows_its_kl_and_the_tokens_it_moved(tmp_path):
    state = tmp_path / "state"
    command = (f"env PYTHONPATH={ROOT} COLUMNS=150 COLORTERM=truecolor {sys.executable} -c 'from harness.cli import run; run()' chat --user alice "
               f"--state {state} --device cpu --threads 1 --max-tokens 40; echo CHAT-EXITED $?; sleep 600")
    terminal = Terminal(f"hindsight-chat-{os.getpid()}", command)
    try:
        terminal.wait_for(r"you>")
        assert "chatting as alice" in terminal.screen()
        terminal.type("How do I cook rice?")
        terminal.wait_for(r"you>", 2)
        terminal.type("Way too long. One sentence, please.")
        screen = terminal.wait_for(r"you>", 3)
        learned = re.search(r"learned from your message \(reattempt_with_feedback\): adapter KL ([0-9.e-]+) \(\+([0-9.e-]+)\), 1 update ", screen)
        assert learned and float(learned.group(1)) > 0, screen
        terminal.type("/tokens")
        screen = terminal.wait_for(r"most pushed down", 1)
        assert "your message: Way too long. One sentence, please." in screen
        coloured = terminal.screen(colours=True)
        assert re.search(r"\x1b\[[0-9;]*48;[25];", coloured), "no background colours on the tokens"
        terminal.type("Thanks, that works.")
        terminal.wait_for(r"you>", 5)
        terminal.type("/stats")
        screen = terminal.wait_for(r"interactions, \d+ updates so far", 1)
        assert re.search(r"2 interactions, 2 updates so far", screen), screen
        terminal.type("/quit")
        screen = terminal.wait_for(r"CHAT-EXITED", 1)
        assert "CHAT-EXITED 0" in screen and "Traceback" not in screen
        if os.environ.get("HINDSIGHT_CHAT_TRANSCRIPT"):  # docs/chat-transcript.md is this screen
            Path(os.environ["HINDSIGHT_CHAT_TRANSCRIPT"]).write_text(screen.split("CHAT-EXITED")[0].rstrip() + "\n")
    finally:
        terminal.close()
    assert (state / "users" / "alice" / "current.json").is_file()  # the adapter stays for the next chat
