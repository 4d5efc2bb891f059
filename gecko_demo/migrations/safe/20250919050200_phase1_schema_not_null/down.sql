SET lock_timeout = '5s';
ALTER TABLE "Issue" ALTER COLUMN "sortWeight" DROP NOT NULL;
