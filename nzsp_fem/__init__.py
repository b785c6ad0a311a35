"""nzsp-fem: electro-chemo-mechanical phase-field model of Na dendrites along grain
boundaries in Na3Zr2Si2PO12, solved with DOLFINx 0.9 under MPI."""

__version__ = "0.1.0"
