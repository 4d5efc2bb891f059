CREATE INDEX CONCURRENTLY IF NOT EXISTS "Issue_severity_category_idx" ON "Issue"("severity", "category");
