"""SQLite persistence of ops and materialised state; key files and data dirs."""
