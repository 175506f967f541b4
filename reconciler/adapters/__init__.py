"""The outside world: git, the file system, SQLite, inotify."""
