"""The ``mailslot`` command line: thin front ends over ``mailslot.client`` and ``mailslot.server``."""
