CREATE INDEX CONCURRENTLY IF NOT EXISTS "Issue_scanId_idx" ON "Issue"("scanId");
