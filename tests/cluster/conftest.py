"""Ray reads these when it is imported, so they are set before any test module imports
it: every Ray process of these tests on loopback, and a driver's 127.0.0.1 address left
as given (Ray otherwise swaps it for the machine's own address)."""

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
