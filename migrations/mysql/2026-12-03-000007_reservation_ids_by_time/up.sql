-- Reservation ids gained 12 hex digits of their creation time before the
-- 32 random ones ("rsv_" + 44): ids sort by creation, so InnoDB appends
-- each new reservation at the end of its primary key instead of at a
-- random page.
ALTER TABLE reservations MODIFY id VARCHAR(48) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
