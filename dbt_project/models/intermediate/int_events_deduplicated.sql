{{ latest_deliveries(ref('stg_raw__events')) }}
