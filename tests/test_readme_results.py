"""README's results block and NOTES' floor table are exactly what ``python -m fastcells.bench
readme`` renders from the committed result files, so no number in them can be typed by hand
or drift from them."""
from fastcells.bench import readme


def test_readme_results_block_matches_committed_results():
    text = readme.README.read_text()
    assert text.count(readme.START) == 1 and text.count(readme.END) == 1
    block = text[text.index(readme.START):text.index(readme.END) + len(readme.END)]
    assert block == readme.render(readme.RESULTS_DIR), (
        "README.md's results block is out of date: run `python -m fastcells.bench readme`")


def test_notes_floor_table_matches_committed_results():
    assert readme.update_notes(readme.NOTES, readme.RESULTS_DIR, check=True) is False, (
        "benchmarks/NOTES.md's floor table is out of date: run `python -m fastcells.bench readme`")


def test_readme_keeps_its_first_two_commands_on_top():
    first_block = readme.README.read_text().split("```")[1]
    lines = first_block.splitlines()
    assert lines[0] == "bash" and lines[1].startswith("make demo")
    assert lines[3].startswith("make test")


def test_committed_markdown_reports_are_rendered_from_their_json():
    """Each committed ``<device>_<kernels|train>.md`` is its JSON through the formatter."""
    import json

    from fastcells.bench import kernels, training

    formatters = {"kernels": kernels.format_kernels, "train": training.format_training}
    found = 0
    for path in sorted(readme.RESULTS_DIR.glob("*_*.json")):
        kind = path.stem.split("_", 1)[1]
        if kind not in formatters:
            continue
        found += 1
        result = json.loads(path.read_text())
        assert path.with_suffix(".md").read_text() == formatters[kind](result) + "\n", path
    assert found >= 2  # the committed CPU kernel and training results
