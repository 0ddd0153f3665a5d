"""The error of a mistake in what the user gave: shared by the library and the `rewardkit` command."""


class UserInputError(ValueError):
    """A path, folder, repo id, flag or file that the user gave is wrong, and the message names it
    and says what to do. The CLI prints it as it is, without the "--debug for the full traceback"
    hint it adds to other failures: a traceback of the check would not help the reader.

    A plain ValueError stays what it was: a caller passing the library a wrong argument, or a
    failure inside a library beneath rewardkit, where the traceback is what helps. UserInputError is
    a ValueError, so code that caught the ValueError these checks raised before keeps working."""
