"""The ``pm`` command (installed as ``posemachines.cli``)."""
