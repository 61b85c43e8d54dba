import dagster as dg

# Partitions start at the first candle of the demo data (the real EURUSD sample, 2017-04-19).
FIRST_DAY = "2017-04-19"
DAILY = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
# labeled_audits[d] needs the candles of d .. d+7 (a 7D horizon from late on day d)
CANDLE_WINDOW = dg.TimeWindowPartitionMapping(start_offset=0, end_offset=7)
HORIZON_DAYS = 8
