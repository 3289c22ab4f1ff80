"""Reading packet captures: pcap/pcapng files, link and IP decoding, and per-flow grouping."""
