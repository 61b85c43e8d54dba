"""Demo and test data: the real EURUSD sample, a generated 1-minute market, generated insights.

Which data is real and which is generated:

- `samples.eurusd_sample()` is REAL: EURUSD hourly candles 2017-04-19 09:00 to 2018-02-07 15:00
  UTC (5,000 bars) from the CSV that ships in the `backtesting` PyPI package (AGPL-3.0; only the CSV
  is read, its code is never imported; install it with ``pip install autopsy[demo]``).
- `market.generate_market()` is GENERATED: synthetic 1-minute candles from 2018-03-05 on, after
  the sample, so the two never overlap.
- `insights_gen.generate_insights()` is GENERATED: demo insights over any candles.

Pure numpy/pandas: nothing here imports dagster, mlflow or a database driver.
"""
from autopsy_assets.data.insights_gen import BAD_ROWS, generate_insights
from autopsy_assets.data.market import demo_candles, generate_market, resample
from autopsy_assets.data.samples import eurusd_sample

__all__ = ["BAD_ROWS", "demo_candles", "eurusd_sample", "generate_insights", "generate_market",
           "resample"]
