"""PostgresStorage, in three parts: the storage (``_storage``), its schema and migrations
(``_migrations``), and the change feed's LISTEN thread (``_listen``)."""
