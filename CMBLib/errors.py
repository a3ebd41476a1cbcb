"""The one exception type CMBLib raises for bad input.

Every message is a single line a radiologist can act on, e.g.
"volume has 4 dimensions; pick one echo".  The `cmb` command prints it and exits 2.
"""


class CMBError(ValueError):
    """Bad input or a refused operation; the message is one actionable line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
