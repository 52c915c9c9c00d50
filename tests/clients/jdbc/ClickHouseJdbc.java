import java.sql.Array;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;

/**
 * ClickHouse's JDBC driver (com.clickhouse:jdbc-v2, the one DBeaver and most BI tools use)
 * against ept's SQL endpoint, as a tool would use it. Prints what it read, one line per row
 * or fact, tab-separated, for tests/integration/test_sql_clients.py to compare.
 *
 * <pre>java -cp CLASSPATH ClickHouseJdbc URL USER PASSWORD MODE [ARGUMENT...]</pre>
 *
 * Modes: query SQL; typed; prepared SQL VALUE...; metadata TABLE; cancel SQL.
 */
public final class ClickHouseJdbc {
    public static void main(String[] args) throws Exception {
        com.clickhouse.jdbc.Driver.load(); // 0.10.0 does not register itself
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        properties.setProperty("password", args[2]);
        String mode = args[3];
        List<String> rest = Arrays.asList(args).subList(4, args.length);
        try (Connection connection = DriverManager.getConnection(args[0], properties)) {
            switch (mode) {
                case "query" -> query(connection, rest.get(0));
                case "typed" -> typed(connection);
                case "prepared" -> prepared(connection, rest.get(0), rest.subList(1, rest.size()));
                case "metadata" -> metadata(connection, rest.get(0));
                case "cancel" -> cancel(connection, rest.get(0));
                default -> throw new IllegalArgumentException("unknown mode " + mode);
            }
        }
    }

    private static void print(ResultSet rows) throws SQLException {
        ResultSetMetaData meta = rows.getMetaData();
        List<String> cells = new ArrayList<>();
        for (int i = 1; i <= meta.getColumnCount(); i++) {
            cells.add(meta.getColumnLabel(i));
        }
        System.out.println(String.join("\t", cells));
        while (rows.next()) {
            cells.clear();
            for (int i = 1; i <= meta.getColumnCount(); i++) {
                cells.add(String.valueOf(rows.getString(i)));
            }
            System.out.println(String.join("\t", cells));
        }
    }

    private static void query(Connection connection, String sql) throws SQLException {
        try (Statement statement = connection.createStatement();
             ResultSet rows = statement.executeQuery(sql)) {
            print(rows);
        }
    }

    private static void typed(Connection connection) throws SQLException {
        String sql = "SELECT toUInt64(42) AS u, 'text' AS s, toFloat64(1.5) AS f, "
            + "toDateTime('2026-12-05 10:00:00', 'UTC') AS dt, toDate('2026-12-05') AS d, "
            + "CAST(NULL AS Nullable(Int32)) AS n, [1, 2, 3] AS a, true AS b, "
            + "toDecimal64(3.25, 2) AS dec, toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0') AS id";
        try (Statement statement = connection.createStatement();
             ResultSet rows = statement.executeQuery(sql)) {
            rows.next();
            System.out.println("u\t" + rows.getLong("u"));
            System.out.println("s\t" + rows.getString("s"));
            System.out.println("f\t" + rows.getDouble("f"));
            System.out.println("dt\t" + rows.getTimestamp("dt").toInstant());
            System.out.println("d\t" + rows.getDate("d").toLocalDate());
            System.out.println("n\t" + rows.getInt("n") + "\t" + rows.wasNull());
            Array array = rows.getArray("a");
            Object[] elements = (Object[]) array.getArray();
            System.out.println("a\t" + Arrays.toString(elements));
            System.out.println("b\t" + rows.getBoolean("b"));
            System.out.println("dec\t" + rows.getBigDecimal("dec"));
            System.out.println("id\t" + rows.getObject("id"));
            System.out.println("next\t" + rows.next());
        }
    }

    private static void prepared(Connection connection, String sql, List<String> values)
            throws SQLException {
        try (PreparedStatement statement = connection.prepareStatement(sql)) {
            for (int i = 0; i < values.size(); i++) {
                statement.setString(i + 1, values.get(i));
            }
            try (ResultSet rows = statement.executeQuery()) {
                print(rows);
            }
        }
    }

    /** What DBeaver's navigator asks: the schemas, the tables, then a table's columns. */
    private static void metadata(Connection connection, String table) throws SQLException {
        DatabaseMetaData meta = connection.getMetaData();
        System.out.println("product\t" + meta.getDatabaseProductName());
        try (ResultSet schemas = meta.getSchemas()) {
            while (schemas.next()) {
                System.out.println("schema\t" + schemas.getString("TABLE_SCHEM"));
            }
        }
        String schema = connection.getSchema(); // the URL's database, as DBeaver opens it
        System.out.println("current\t" + schema);
        try (ResultSet tables = meta.getTables(null, null, "%", null)) {
            while (tables.next()) {
                System.out.println("table\t" + tables.getString("TABLE_SCHEM") + "\t"
                    + tables.getString("TABLE_NAME")
                    + "\t" + tables.getString("TABLE_TYPE"));
            }
        }
        try (ResultSet columns = meta.getColumns(null, schema, table, "%")) {
            while (columns.next()) {
                System.out.println("column\t" + columns.getString("COLUMN_NAME") + "\t"
                    + columns.getString("TYPE_NAME") + "\t" + columns.getInt("DATA_TYPE"));
            }
        }
    }

    /**
     * A long query cancelled from another thread 1.5 s after it starts, as a tool's Cancel
     * button does. Prints how it ended ("stopped" and the error, or "finished") and when,
     * waiting at most 30 s for it.
     */
    private static void cancel(Connection connection, String sql) throws Exception {
        Statement statement = connection.createStatement();
        long start = System.nanoTime();
        Thread running = new Thread(() -> {
            try (ResultSet rows = statement.executeQuery(sql)) {
                while (rows.next()) {
                    // read it all
                }
                System.out.println("finished");
            } catch (SQLException error) {
                System.out.println("stopped\t" + String.valueOf(error.getMessage()).replace('\n', ' '));
            }
            System.out.println("elapsed_ms\t" + (System.nanoTime() - start) / 1_000_000);
        });
        running.setDaemon(true);
        running.start();
        Thread.sleep(1500);
        try {
            statement.cancel();
            System.out.println("cancel_returned_ms\t" + (System.nanoTime() - start) / 1_000_000);
        } catch (SQLException error) {
            System.out.println("cancel_error\t" + String.valueOf(error.getMessage()).replace('\n', ' '));
        }
        running.join(30_000);
        if (running.isAlive()) {
            System.out.println("still_running_ms\t" + (System.nanoTime() - start) / 1_000_000);
            System.out.flush();
            System.exit(0);
        }
    }
}
