DROP TABLE rate_buckets;
DROP TABLE permission_counters;
ALTER TABLE plan_permissions DROP COLUMN limit_period;
ALTER TABLE plan_permissions DROP COLUMN limit_units;
ALTER TABLE plans DROP COLUMN rate_per_seconds;
ALTER TABLE plans DROP COLUMN rate_units;
