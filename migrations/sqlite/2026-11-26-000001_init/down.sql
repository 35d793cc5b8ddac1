DROP TABLE usage_events;
DROP TABLE usage_counters;
DROP TABLE subscriptions;
DROP TABLE api_keys;
DROP TABLE users;
DROP TABLE plan_permissions;
DROP TABLE plans;
DROP TABLE permissions;
