"""The README's examples run as written: each fenced block of a section is saved under the name
its first line gives (``# my_reach.py``) and its ``adaptrl`` commands are run (issue 26: the
"Your own gymnasium env" snippet used classes it never defined)."""

import json
import re
import shlex
from pathlib import Path

from adaptrl.cli import main
from adaptrl.envs.checker import check_family

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = {  # appended to the README's commands: the same code path, a few seconds of work
    "train": ["--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=2"]
    + ["--set", "algo.hidden_sizes=[8]", "--set", "sampler.workers=1", "--iterations", "2"],
    "evaluate": ["--num-tasks", "3", "--set", "evaluate.episodes_per_task=2", "--no-references"],
}


def section_blocks(title: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block under the heading ``title``, up to the next one."""
    text = README.read_text()
    start = text.index(f"\n### {title}\n")
    end = min(i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if i > 0)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.S)


def test_the_own_gymnasium_env_example_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = section_blocks("Your own gymnasium env")[:3]  # "From Python:" follows
    assert [lang for lang, _ in blocks] == ["python", "yaml", "bash"]
    for _, code in blocks[:2]:  # the files the user saves
        name = code.splitlines()[0].removeprefix("# ")
        (tmp_path / name).write_text(code)
    monkeypatch.chdir(tmp_path)  # "from the folder holding both files"
    commands = [shlex.split(line) for line in blocks[2][1].splitlines() if line.strip()]
    assert [argv[3] for argv in commands] == ["train", "evaluate"]
    for argv in commands:
        assert argv[0] == "adaptrl"
        assert main([*argv[1:], "--quiet", *FAST[argv[3]]]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "runs" / "reach" / "eval" / "test.json").read_text())
    assert record["env"] == "my-reach" and record["num_tasks"] == 3
    assert all(r <= 0 for r in record["mean_return"])  # minus a distance
    check_family("my-reach", num_envs=2, steps=10)  # the example meets the env contract
