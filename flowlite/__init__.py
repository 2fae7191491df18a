"""flowlite: reward fine-tuning of flow matching models through optimal control.

Paper time everywhere: t = 0 is noise x0 ~ N(0, I), t = 1 is data, x_t = t x1 + (1 - t) x0.
See ../shared/spec/algorithms.md §1 for the conventions and DESIGN.md for the seams.
"""

__version__ = "0.1.0"
