DROP INDEX reservations_by_expiry;
DROP INDEX reservations_held_of_user;
DROP INDEX reservations_held_by_expiry;
CREATE INDEX reservations_by_expiry ON reservations (status, expires_at);
CREATE INDEX reservations_of_user ON reservations (user_id, status, period_start);
