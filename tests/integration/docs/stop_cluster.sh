# Stops a cluster a doc block left running in the current (scratch) directory.
build/release/bin/tandem down --run-dir .tandem
