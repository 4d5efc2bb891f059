-- Gecko Advisor application schema (Prisma 5.22, PostgreSQL), tables and keys
-- shared by both install variants. Indexes differ per variant and live in
-- indexes_fresh.sql / indexes_incremental.sql. Written for gecko-exporter's
-- demo and tests from the schema reference (docs: gecko-advisor-db.md §1-3).
--
-- Conventions kept from the app: quoted PascalCase/camelCase identifiers,
-- TEXT cuid ids, TIMESTAMP(3) without time zone, Scan.status as plain TEXT.

CREATE TYPE "IssueSeverity" AS ENUM ('info', 'low', 'medium', 'high', 'critical');
CREATE TYPE "Subscription" AS ENUM ('FREE', 'PRO', 'TEAM');
CREATE TYPE "SubscriptionStatus" AS ENUM ('INACTIVE', 'ACTIVE', 'PAST_DUE', 'CANCELED', 'TRIALING');
CREATE TYPE "AuthMethod" AS ENUM ('EMAIL', 'WALLET', 'BOTH');
CREATE TYPE "CheckFrequency" AS ENUM ('DAILY', 'WEEKLY', 'MONTHLY');

CREATE TABLE "User" (
    "id"                 TEXT NOT NULL,
    "email"              TEXT NOT NULL,
    "name"               TEXT,
    "passwordHash"       TEXT,
    "emailVerified"      BOOLEAN NOT NULL DEFAULT false,
    "authMethod"         "AuthMethod" NOT NULL DEFAULT 'EMAIL',
    "subscription"       "Subscription" NOT NULL DEFAULT 'FREE',
    "subscriptionStatus" "SubscriptionStatus" NOT NULL DEFAULT 'INACTIVE',
    "subscriptionEndsAt" TIMESTAMP(3),
    "apiKey"             TEXT,
    "apiCallsMonth"      INTEGER NOT NULL DEFAULT 0,
    "apiResetAt"         TIMESTAMP(3),
    "createdAt"          TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"          TIMESTAMP(3) NOT NULL,
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "Scan" (
    "id"              TEXT NOT NULL,
    "targetType"      TEXT NOT NULL,
    "input"           TEXT NOT NULL,
    "normalizedInput" TEXT,
    "status"          TEXT NOT NULL,
    "score"           INTEGER,
    "label"           TEXT,
    "progress"        INTEGER NOT NULL DEFAULT 0,
    "summary"         TEXT,
    "startedAt"       TIMESTAMP(3),
    "finishedAt"      TIMESTAMP(3),
    "slug"            TEXT NOT NULL,
    "source"          TEXT NOT NULL DEFAULT 'manual',
    "dedupeOfId"      TEXT,
    "shareMessage"    TEXT,
    "meta"            JSONB,
    "userId"          TEXT,
    "isPublic"        BOOLEAN NOT NULL DEFAULT true,
    "isProScan"       BOOLEAN NOT NULL DEFAULT false,
    "scannerIp"       TEXT,
    "createdAt"       TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"       TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Scan_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "Evidence" (
    "id"        TEXT NOT NULL,
    "scanId"    TEXT NOT NULL,
    "kind"      TEXT NOT NULL,
    "severity"  INTEGER NOT NULL,
    "title"     TEXT NOT NULL,
    "details"   JSONB NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Evidence_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "Issue" (
    "id"           TEXT NOT NULL,
    "scanId"       TEXT NOT NULL,
    "key"          TEXT,
    "severity"     "IssueSeverity" NOT NULL,
    "category"     TEXT NOT NULL,
    "title"        TEXT NOT NULL,
    "summary"      TEXT,
    "howToFix"     TEXT,
    "whyItMatters" TEXT,
    "references"   JSONB,
    "sortWeight"   INTEGER DEFAULT 0,
    "createdAt"    TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"    TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Issue_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "CachedList" (
    "id"        TEXT NOT NULL,
    "source"    TEXT NOT NULL,
    "version"   TEXT NOT NULL,
    "fetchedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "data"      JSONB NOT NULL,
    CONSTRAINT "CachedList_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "RateLimit" (
    "id"         TEXT NOT NULL,
    "identifier" TEXT NOT NULL,
    "scansCount" INTEGER NOT NULL DEFAULT 0,
    "date"       TEXT NOT NULL,
    "createdAt"  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt"  TIMESTAMP(3) NOT NULL,
    CONSTRAINT "RateLimit_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "WatchedUrl" (
    "id"             TEXT NOT NULL,
    "userId"         TEXT NOT NULL,
    "url"            TEXT NOT NULL,
    "lastScore"      INTEGER,
    "lastChecked"    TIMESTAMP(3),
    "checkFrequency" "CheckFrequency" NOT NULL DEFAULT 'WEEKLY',
    "alertOnChange"  BOOLEAN NOT NULL DEFAULT true,
    "createdAt"      TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "WatchedUrl_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "PasswordResetToken" (
    "id"        TEXT NOT NULL,
    "userId"    TEXT NOT NULL,
    "tokenHash" TEXT NOT NULL,
    "expiresAt" TIMESTAMP(3) NOT NULL,
    "usedAt"    TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "PasswordResetToken_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "WalletLink" (
    "id"                TEXT NOT NULL,
    "userId"            TEXT NOT NULL,
    "walletAddressHash" TEXT NOT NULL,
    "linkedAt"          TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "lastVerified"      TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "WalletLink_pkey" PRIMARY KEY ("id")
);

-- Unique keys and indexes common to both variants.
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE UNIQUE INDEX "User_apiKey_key" ON "User"("apiKey");
CREATE INDEX "User_email_idx" ON "User"("email");
CREATE INDEX "User_apiKey_idx" ON "User"("apiKey");
CREATE UNIQUE INDEX "Scan_slug_key" ON "Scan"("slug");
CREATE INDEX "Scan_user_history_idx" ON "Scan"("userId", "createdAt" DESC);
CREATE INDEX "Scan_public_reports_idx" ON "Scan"("isPublic", "createdAt" DESC);
CREATE INDEX "Scan_ip_ratelimit_idx" ON "Scan"("scannerIp", "createdAt" DESC);
CREATE UNIQUE INDEX "RateLimit_identifier_date_key" ON "RateLimit"("identifier", "date");
CREATE INDEX "RateLimit_lookup_idx" ON "RateLimit"("identifier", "date");
CREATE UNIQUE INDEX "WatchedUrl_userId_url_key" ON "WatchedUrl"("userId", "url");
CREATE INDEX "WatchedUrl_schedule_idx" ON "WatchedUrl"("lastChecked", "checkFrequency");
CREATE UNIQUE INDEX "PasswordResetToken_tokenHash_key" ON "PasswordResetToken"("tokenHash");
CREATE INDEX "PasswordResetToken_user_idx" ON "PasswordResetToken"("userId", "expiresAt");
CREATE UNIQUE INDEX "WalletLink_userId_key" ON "WalletLink"("userId");
CREATE UNIQUE INDEX "WalletLink_walletAddressHash_key" ON "WalletLink"("walletAddressHash");
CREATE INDEX "WalletLink_walletAddressHash_idx" ON "WalletLink"("walletAddressHash");

-- Foreign keys (Prisma: ON UPDATE CASCADE everywhere).
ALTER TABLE "Scan" ADD CONSTRAINT "Scan_userId_fkey"
    FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE;
ALTER TABLE "Scan" ADD CONSTRAINT "Scan_dedupeOfId_fkey"
    FOREIGN KEY ("dedupeOfId") REFERENCES "Scan"("id") ON DELETE SET NULL ON UPDATE CASCADE;
ALTER TABLE "Evidence" ADD CONSTRAINT "Evidence_scanId_fkey"
    FOREIGN KEY ("scanId") REFERENCES "Scan"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "Issue" ADD CONSTRAINT "Issue_scanId_fkey"
    FOREIGN KEY ("scanId") REFERENCES "Scan"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "WatchedUrl" ADD CONSTRAINT "WatchedUrl_userId_fkey"
    FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "PasswordResetToken" ADD CONSTRAINT "PasswordResetToken_userId_fkey"
    FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "WalletLink" ADD CONSTRAINT "WalletLink_userId_fkey"
    FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Prisma Migrate bookkeeping (prisma-engines, postgres flavour).
CREATE TABLE "_prisma_migrations" (
    "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"            VARCHAR(64) NOT NULL,
    "finished_at"         TIMESTAMPTZ,
    "migration_name"      VARCHAR(255) NOT NULL,
    "logs"                TEXT,
    "rolled_back_at"      TIMESTAMPTZ,
    "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
