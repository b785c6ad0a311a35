"""Exit status of `nzsp-fem`, the one definition (README: "Exit status")."""

EXIT_OK = 0  # completed (or stopped at a short circuit)
EXIT_USAGE = 2  # bad input: config, geometry, output directory
EXIT_DIVERGED = 3  # dt fell below time.dt_min; what was computed is kept
EXIT_INTERRUPTED = 4  # SIGTERM/SIGINT or time.max_steps
EXIT_OUTPUT = 5  # results could not be written (disk full, quota, read-only or removed directory); checkpoints kept

STATUS_EXIT = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}


def exit_code(statuses) -> int:
    """One exit status for one or several run statuses (a study): the worst wins."""
    statuses = list(statuses)
    if all(s == "completed" for s in statuses):
        return EXIT_OK
    if any(s == "diverged" for s in statuses):
        return EXIT_DIVERGED
    return EXIT_INTERRUPTED
