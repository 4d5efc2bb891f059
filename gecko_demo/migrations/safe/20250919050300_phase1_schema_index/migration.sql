CREATE INDEX CONCURRENTLY IF NOT EXISTS "Issue_evidenceId_idx" ON "Issue"("evidenceId");
