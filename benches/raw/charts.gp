set terminal pngcairo size 900,480 font ",11"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set key top right
set grid ytics
set yrange [0:*]
set datafile separator whitespace
set output "benches/throughput.png"
set title "Requests per second, 1 KiB response (higher is better)"
set ylabel "req/s"
plot "benches/raw/throughput.dat" using 2:xtic(1) title "HTTP/1.1 (wrk, 50 conns)", "" using 3 title "HTTP/2 (4 conns x 16 streams)"
set output "benches/latency.png"
set title "Latency, 1 KiB response (lower is better)"
set ylabel "ms"
plot "benches/raw/latency.dat" using 2:xtic(1) title "HTTP/1.1 p50", "" using 3 title "HTTP/1.1 p99", "" using 4 title "HTTP/2 p50", "" using 5 title "HTTP/2 p99"
