"""User-facing errors.

A `WanUserError` is a problem with what the user gave the pack (a file, an input, a setting).
Its message names the thing and says what to do; ComfyUI shows it in the UI and keeps serving.
"""


class WanUserError(ValueError):
    """Bad input from the user. The message is shown as it is, so it must say what to do."""
