{{ weighted_events(ref('int_events_deduplicated')) }}
