// Command chgo runs one query against ept's SQL endpoint with clickhouse-go v2 (the Go
// client Grafana's ClickHouse data source is built on) over HTTP, as a tool would, and
// prints what it read as JSON lines: the column names, then each row.
//
//	chgo -addr 127.0.0.1:8123 -user analyst -password … [-api native|sql]
//	     [-compression none|lz4|zstd|gzip|deflate|br] [-deadline 30s] -query 'SELECT …'
//
// -api sql goes through database/sql; -deadline gives the query a context deadline (the
// driver then sends max_execution_time, as Grafana's queries do). Built once by
// `make client-deps` into the cache (tests/integration/test_sql_clients.py runs it).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8123", "host:port of the HTTP interface")
	user := flag.String("user", "default", "user")
	password := flag.String("password", "", "password")
	api := flag.String("api", "native", "native (clickhouse.Conn) or sql (database/sql)")
	method := flag.String("compression", "none", "none, lz4, zstd, gzip, deflate or br")
	deadline := flag.Duration("deadline", 0, "the query's context deadline (0: none)")
	query := flag.String("query", "SELECT 1", "the query")
	flag.Parse()

	options := &clickhouse.Options{
		Addr:        []string{*addr},
		Protocol:    clickhouse.HTTP,
		Auth:        clickhouse.Auth{Database: "default", Username: *user, Password: *password},
		DialTimeout: 10 * time.Second,
	}
	methods := map[string]clickhouse.CompressionMethod{
		"lz4": clickhouse.CompressionLZ4, "zstd": clickhouse.CompressionZSTD,
		"gzip": clickhouse.CompressionGZIP, "deflate": clickhouse.CompressionDeflate,
		"br": clickhouse.CompressionBrotli,
	}
	if m, ok := methods[*method]; ok {
		options.Compression = &clickhouse.Compression{Method: m}
	} else if *method != "none" {
		fail(fmt.Errorf("unknown compression %q", *method))
	}
	ctx := context.Background()
	if *deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *deadline)
		defer cancel()
	}
	var err error
	if *api == "sql" {
		err = viaDatabaseSQL(ctx, options, *query)
	} else {
		err = viaConn(ctx, options, *query)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func emit(value any) {
	line, err := json.Marshal(value)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(line))
}

func viaConn(ctx context.Context, options *clickhouse.Options, query string) error {
	conn, err := clickhouse.Open(options)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	emit(rows.Columns())
	types := rows.ColumnTypes()
	for rows.Next() {
		cells := make([]any, len(types))
		for i, column := range types {
			cells[i] = reflect.New(column.ScanType()).Interface()
		}
		if err := rows.Scan(cells...); err != nil {
			return err
		}
		for i := range cells {
			cells[i] = reflect.ValueOf(cells[i]).Elem().Interface()
		}
		emit(cells)
	}
	return rows.Err()
}

func viaDatabaseSQL(ctx context.Context, options *clickhouse.Options, query string) error {
	db := clickhouse.OpenDB(options)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	columns, err := rows.Columns()
	if err != nil {
		return err
	}
	emit(columns)
	for rows.Next() {
		cells := make([]any, len(columns))
		pointers := make([]any, len(columns))
		for i := range cells {
			pointers[i] = &cells[i]
		}
		if err := rows.Scan(pointers...); err != nil {
			return err
		}
		emit(cells)
	}
	return rows.Err()
}

