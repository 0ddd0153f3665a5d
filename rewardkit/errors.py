"""The errors of a mistake in what the user gave: UserInputError, shared by the library and the
`rewardkit` command; CliError and UsageError, raised by the command's own checks."""


class UserInputError(ValueError):
    """A path, folder, repo id, flag or file that the user gave is wrong, and the message names it
    and says what to do. The CLI prints it as it is, without the "--debug for the full traceback"
    hint it adds to other failures: a traceback of the check would not help the reader.

    A plain ValueError stays what it was: a caller passing the library a wrong argument, or a
    failure inside a library beneath rewardkit, where the traceback is what helps. UserInputError is
    a ValueError, so code that caught the ValueError these checks raised before keeps working."""


class CliError(Exception):
    """A problem the user can fix; its message is shown as is. Exit code 1."""


class UsageError(CliError):
    """The command line itself is wrong, whatever the files hold: flags that contradict each other
    or lack their partner, an unknown flag, a flag value out of range. Exit code 2, as for the
    usage errors argparse finds itself (`--limit 0`), so a script can tell a wrong command from a
    failed run; files, folders, data and models that are not as the command needs exit 1."""
