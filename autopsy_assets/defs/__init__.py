"""Dagster definitions split by concern: partitions, assets (with their checks), jobs, schedules,
sensors. autopsy_assets.definitions merges them into the one Definitions object."""
import warnings

import dagster as dg

# Known and accepted in Dagster 1.13: BackfillPolicy is beta and a partitioned AssetCheckSpec is a
# preview feature; neither has a stable replacement yet (DESIGN.md section 5).
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
