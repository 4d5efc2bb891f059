CREATE INDEX CONCURRENTLY IF NOT EXISTS "Scan_dedupeOfId_idx" ON "Scan"("dedupeOfId");
