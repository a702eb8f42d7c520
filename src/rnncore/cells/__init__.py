"""The gated cells' NumPy reference: one layer, one direction, per cell.

:mod:`rnncore.cells.lstm` and :mod:`rnncore.cells.gru` have the layout and conventions of
:mod:`rnncore.reference` (the Elman cell), so that one layer walker treats all cells
alike.
"""
