DROP TABLE change_epoch;
