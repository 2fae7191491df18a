"""Figures must reach the notebook, checked on the outputs nbval collects while it runs each cell (no second run).

A kernel that inherits ``MPLBACKEND=Agg`` draws nothing on ``plt.show()``, and a cell whose only figure lives inside
an ipywidgets ``interact`` shows nothing in static viewers (GitHub, nbviewer). So, for every notebook cell nbval
executes:

* the first code cell starts with ``%matplotlib inline``;
* a cell that calls ``plt.show()`` or ``display(Image(...))`` at its top level (or calls a function defined in the
  same cell that does) leaves at least one ``image/png`` output;
* a slider cell (``interact(...)``) also calls its drawing function plainly, so it leaves one image for the widget
  and one plain image that static viewers show (nbval collects both: the widget's output travels on the same
  channel).
"""

import re

import pytest

SHOWS = re.compile(r"plt\.show\(\)|display\(Image\(")


def images(outputs: list) -> int:
    """Number of ``image/png`` outputs among a cell's collected outputs."""
    return sum("image/png" in out.get("data", {}) for out in outputs)


def must_draw(source: str) -> bool:
    """True when the cell itself runs a figure call: one at top level, or a call of a function defined in it that
    shows one (a cell that only defines a helper for later cells is exempt)."""
    if not SHOWS.search(source):
        return False
    top = [line for line in source.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    if any(SHOWS.search(line) for line in top):
        return True
    defined = re.findall(r"^def (\w+)\(", source, flags=re.M)
    calls = [name for name in defined if any(re.search(rf"\b{name}\(", line) and not line.startswith("def ")
                                             for line in top)]
    return bool(calls)


def plain_calls(source: str) -> int:
    """Top-level calls of a function defined in the cell (``show()``, not ``interact(show, ...)``)."""
    defined = re.findall(r"^def (\w+)\(", source, flags=re.M)
    return sum(bool(re.match(rf"{name}\(", line)) for name in defined for line in source.splitlines())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    cell, outputs = getattr(item, "cell", None), getattr(item, "test_outputs", None)
    if cell is None or outputs is None or cell.cell_type != "code":
        return result
    first = next(c for c in item.parent.nb.cells if c.cell_type == "code")
    if cell is first:
        assert cell.source.startswith("%matplotlib inline"), "the first code cell must set %matplotlib inline"
    if must_draw(cell.source):
        assert images(outputs) > 0, (f"cell {item.cell_num} shows a figure but produced no image output "
                                     "(is MPLBACKEND=Agg inherited by the kernel, or the figure only inside a widget?)")
    sliders = len(re.findall(r"^interact\(", cell.source, flags=re.M))
    if sliders:
        assert plain_calls(cell.source) >= sliders, f"cell {item.cell_num}: call the slider's function plainly too"
        assert images(outputs) >= 2 * sliders, f"cell {item.cell_num}: the slider's default figure is missing"
    return result
