-- Records the event_id range this transaction wrote and the event times it held, for the
-- rollups' time bounds. $1 the floor read before the first id was taken, $2 and $3 the least
-- and greatest event time written. currval: the last id this session took, the greatest.
INSERT INTO event_id_ranges (id_floor, id_ceiling, min_event_time, max_event_time)
VALUES ($1, currval('events_event_id_seq'), $2, $3)
