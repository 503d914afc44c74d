"""Recurrent cells, one module per family.

Each family module holds the family's step math as pure functions and its modules (thin
subclasses of :class:`lstm.driver.Recurrent` that own parameters and call those functions).
A new family goes in a new file here, is re-exported from :mod:`lstm`, and is added to
:data:`lstm.registry.CELLS`.
"""
