CREATE INDEX CONCURRENTLY IF NOT EXISTS "Evidence_scanId_count_idx" ON "Evidence"("scanId");
